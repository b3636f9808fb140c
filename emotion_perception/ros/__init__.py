"""ros layer of emotion_perception."""
