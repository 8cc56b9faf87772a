"""Pods: rented (or adopted) machines with a lifecycle recorded in .ops/pods.json."""
