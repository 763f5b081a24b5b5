"""The SMS gateway (SMSC-style): an SMS to the caller after a missed call, and its /smsc callback
(delivery statuses of our SMS, SMS sent to our number)."""
