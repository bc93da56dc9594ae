from migrate.cli.main import program

program()
