"""`python -m transferlab`: the CLI, also as torchrun's module (`torchrun --nproc_per_node 2 -m transferlab run`)."""

from transferlab.cli import main

if __name__ == "__main__":
    main()
