"""Bitrix24: calls in the CRM (the telephony sink), employees from its users (events and periodic
sync), and click-to-call from a CRM card."""
