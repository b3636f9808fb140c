"""eval layer of emotion_perception."""
