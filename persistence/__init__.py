"""Where runs live after they leave memory: the persistence actor and the stores."""
