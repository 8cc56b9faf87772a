import sys

if sys.argv[1:2] == ["exec"]:  # the wrapper: stop signals are held from the first line on
    from runner import early_signals

    early_signals.hold()

from runner.cli import main  # after the signals are held

sys.exit(main())
