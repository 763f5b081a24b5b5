"""Novofon: the cloud's call and SMS notifications to us (/call, /sms), and the CRM webhooks we
sign exactly as Novofon does (so a CRM built for Novofon accepts our records unchanged)."""
