"""megafc's Hydra configs: config.yaml plus groups; plugin groups come from the ConfigStore."""
