"""Data the scorers learn from: routing data (who scored what), QA sets and their graders, query texts."""
