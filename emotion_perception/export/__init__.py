"""export layer of emotion_perception."""
