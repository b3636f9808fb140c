"""train layer of emotion_perception."""
