from gradlab.cli import main

if __name__ == "__main__":  # the recorder process (spawned) imports this module too
    main()
