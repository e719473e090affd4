# lkdevice firmware: runs at boot. Settings live in config.json and board.json
# on flash; see firmware/README.md.
from lkd import boot

boot.main()
