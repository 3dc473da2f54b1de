from .datasets import DATA_ROOT_ENV, data_root, register_corrloss_datasets

__all__ = ["DATA_ROOT_ENV", "data_root", "register_corrloss_datasets"]
