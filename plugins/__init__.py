"""The models that ship with gentool, registered through entry points like any third party's."""
