from sncli.cli.app import main

main()
