"""360dialog Partner API: client, response models and errors."""
