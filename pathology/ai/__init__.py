"""AI on slides: built-in networks (plain torch), the model registry, inference. torch is
imported only here and only when used, so pages and the API start without it."""

# The built-in networks (`networks.py`), named here so that checking a request needs no torch.
ARCHITECTURES = ("patchnet", "resnet18")


class AIError(Exception):
    """Input the AI cannot work with (the message says why): a 400 with `code` in the API."""

    status = 400

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.code = code
