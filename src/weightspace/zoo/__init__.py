from .store import Zoo
