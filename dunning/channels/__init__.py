"""Channels deliver actions from the outbox table: emails and formal notices (`email`, through
the `outbox` folder or `sendgrid`), agency cases (`agency`), court files (`injunction`). Each is
handed a claimed action and its `message` by dispatch, and says what it did (`protocol`)."""
