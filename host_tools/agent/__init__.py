"""The offline voice agent: a LiveKit Agents worker built only from what ships in packages.

Silero VAD, PocketSphinx STT (`sphinx_stt`), eSpeak NG TTS (`espeak_tts`) and a
rule-based brain (`brain`) in place of a language model. Nothing here reaches
the internet. Needs the `agent` extra (`pip install -e '.[agent]'`) and espeak-ng.
"""
