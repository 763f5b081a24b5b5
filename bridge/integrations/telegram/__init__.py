"""Telegram: call messages to group and personal chats (the sink), and the bot (employees link
themselves, «Перезвонить» under missed calls) by long polling or by webhook."""
