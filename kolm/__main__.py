from kolm.cli import entry

entry()
