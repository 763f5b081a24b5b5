"""The test suite. Messages for people follow the locale (bridge/i18n.py reads it once, when
bridge is imported): the tests run in the locale a systemd service gets, so texts are Russian
whatever the developer's LANG is. English texts are tested by running a command with
LC_ALL=en_US.UTF-8, or by passing ``lang=`` explicitly."""

import os

os.environ["LC_ALL"] = "C.UTF-8"
