"""runtime layer of emotion_perception."""
