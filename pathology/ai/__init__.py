"""AI on slides: built-in networks (plain torch), the model registry, inference. torch is
imported only here and only when used, so pages and the API start without it."""
