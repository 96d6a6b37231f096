from blume_share.cli import main

main()
