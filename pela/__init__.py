"""PELA command line and end-to-end jobs (`pela --help`). The library lives in `modeling_pela`,
`datasets_unihand_mix` and `trainers`."""

__version__ = "0.1.0"
