"""Not yet implemented: says so and fails, never pretends."""
from ..errors import NotImplementedYet


def run_list(ctx, args):
    raise NotImplementedYet("this command is not implemented yet", hint="see the README for the commands available now")

def run_status(ctx, args):
    raise NotImplementedYet("this command is not implemented yet", hint="see the README for the commands available now")
