"""Deciding, all pure: what one mail does (inbound), what the sweep sends (sweep), the policy and its guards,
engineer commands (one spec per command), messages by id in both languages, the business calendar."""
