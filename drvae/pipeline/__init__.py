"""The stage-cached pipeline behind the `drvae` entry point."""
