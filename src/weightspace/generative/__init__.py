"""Generative models of weights: the paper's four methods and weightspace's own, one package each
(its data setting, its networks, its generator), over a shared diffusion core (:mod:`.diffusion`).
Each registers itself when imported; :mod:`weightspace.registry` imports them on first use."""
