from gradlab.cli import main

if __name__ == "__main__":  # `python -m gradlab`; importing this module runs nothing
    main()
