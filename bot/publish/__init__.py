"""The publish stage: a repo's plan carried out on the Hub (`HubPublisher`) or previewed (`DryRunPublisher`)."""
