"""Extensions beyond upstream YOLOv5. Each submodule registers its modules into models.registry on import."""
