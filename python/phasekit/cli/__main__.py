from phasekit.cli import run

run()
