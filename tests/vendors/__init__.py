"""Local servers on 127.0.0.1 that follow the documented contracts of HubSpot,
Salesforce, Slack incoming webhooks and a signed-webhook receiver, with faults
to inject: error statuses, rate limits, timeouts and dropped connections."""
