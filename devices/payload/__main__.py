from slimlab_payload.main import main

main()
