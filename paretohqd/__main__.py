from paretohqd.cli import app

app(prog_name="paretohqd")
