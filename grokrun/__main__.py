from grokrun.cli import app

app()
