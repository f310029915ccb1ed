"""Data: readers, simulator, preprocessing, cache and splits."""

from drvae.data.records import GRADE_NAMES, NUM_GRADES, DataError, ReadResult, Record

__all__ = ["GRADE_NAMES", "NUM_GRADES", "DataError", "ReadResult", "Record"]
