from ordertally.cli import main

main()
