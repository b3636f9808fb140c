"""bench layer of emotion_perception."""
