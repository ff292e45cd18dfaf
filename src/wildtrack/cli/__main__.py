from wildtrack.cli import main

main()
