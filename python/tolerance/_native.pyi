"""Type stubs of the private native module `tolerance._native`."""
