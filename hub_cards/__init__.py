"""Templates of the Hub cards PELA writes (jinja, rendered by ``huggingface_hub``'s ``RepoCard.from_template``)."""
