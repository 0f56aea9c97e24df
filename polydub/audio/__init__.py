"""The audio work of a dub: lines fitted to their slots (`fit`), the dub mixed over the
source's background at the delivery loudness (`mix`), and the background without the
voice (`separate`, Demucs)."""
