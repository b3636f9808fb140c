"""nets layer of emotion_perception."""
