"""NYC green-taxi trips: the course's files, or generated ones with the same schema.

``generate`` writes a month of trips as a parquet file with the columns of the NYC TLC green-taxi
records (``lpep_pickup_datetime``, ``lpep_dropoff_datetime``, ``PULocationID``, ``DOLocationID``,
``trip_distance``, fares...). Durations have a structure a model can learn, as in the real data:
zones lie on a map, a trip's distance follows from its two zones, its speed from the hour of the
day and from its zones, and a few records are broken (zero-length and day-long trips) so that the
course's 1-60 minute filter has something to do. The same seed gives the same file.

``read_dataframe`` and ``features`` are the course's preparation: duration in minutes, trips of
1 to 60 minutes, zone ids as strings, the ``PU_DO`` pair, and dicts for a ``DictVectorizer``.
"""

from __future__ import annotations

from pathlib import Path

ZONES = 265
CATEGORICAL = ["PU_DO"]
NUMERICAL = ["trip_distance"]
TARGET = "duration"


def generate(path: str | Path, year: int = 2021, month: int = 1, rows: int = 20_000, seed: int = 0) -> Path:
    """Write ``rows`` green-taxi trips of ``year-month`` to ``path`` (parquet); return the path."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    zone_rng = np.random.default_rng(2021)  # the map is the same in every month's file
    position = zone_rng.uniform(0, 12, size=(ZONES + 1, 2))  # miles on a plane
    slowness = zone_rng.lognormal(0, 0.12, size=ZONES + 1)  # congested zones are slower
    popularity = 1.0 / np.arange(1, ZONES + 1) ** 0.9
    zones = zone_rng.permutation(np.arange(1, ZONES + 1))
    weights = popularity / popularity.sum()

    pickup_zone = rng.choice(zones, size=rows, p=weights)
    # Most trips stay near their start: pick the drop-off among zones close to the pick-up.
    nearby = rng.normal(0, 2.5, size=(rows, 2))
    target = np.clip(position[pickup_zone] + nearby, 0, 12)
    distances_to_zones = np.linalg.norm(position[None, 1:, :] - target[:, None, :], axis=2)
    dropoff_zone = distances_to_zones.argmin(axis=1) + 1

    straight = np.linalg.norm(position[pickup_zone] - position[dropoff_zone], axis=1)
    trip_distance = np.round(np.maximum(0.1, straight * rng.uniform(1.0, 2.5, rows) + rng.exponential(1.0, rows)), 2)

    start = pd.Timestamp(year=year, month=month, day=1)
    days = pd.Period(start, freq="M").days_in_month
    pickup = start + pd.to_timedelta(rng.uniform(0, days * 86400, rows), unit="s")
    hour = pickup.hour.to_numpy() + pickup.minute.to_numpy() / 60
    rush = np.exp(-((hour - 8.5) ** 2) / 2) + np.exp(-((hour - 17.5) ** 2) / 3)
    # Long trips reach faster roads: speed grows with distance (durations bend, not a line).
    cruise = 4 + 40 * (1 - np.exp(-trip_distance / 2.5)) ** 2
    speed_mph = cruise / (1 + 0.6 * rush) / np.sqrt(slowness[pickup_zone] * slowness[dropoff_zone])
    minutes = 2 + trip_distance / speed_mph * 60 * rng.lognormal(0, 0.12, rows)
    broken = rng.random(rows)
    minutes = np.where(broken < 0.015, rng.uniform(0, 0.9, rows), minutes)  # meter errors
    minutes = np.where(broken > 0.992, rng.uniform(70, 1400, rows), minutes)  # forgotten meters
    dropoff = pickup + pd.to_timedelta(minutes * 60, unit="s")

    fare = np.round(2.5 + 2.5 * trip_distance + 0.5 * minutes / 2, 2)
    tip = np.round(np.where(rng.random(rows) < 0.4, fare * rng.uniform(0.1, 0.25, rows), 0.0), 2)
    frame = pd.DataFrame(
        {
            "VendorID": rng.choice([1, 2], size=rows, p=[0.2, 0.8]).astype("int64"),
            "lpep_pickup_datetime": pickup.floor("s"),
            "lpep_dropoff_datetime": dropoff.floor("s"),
            "store_and_fwd_flag": rng.choice(["N", "Y"], size=rows, p=[0.99, 0.01]),
            "RatecodeID": np.ones(rows),
            "PULocationID": pickup_zone.astype("int64"),
            "DOLocationID": dropoff_zone.astype("int64"),
            "passenger_count": rng.choice([1.0, 2.0, 3.0, 5.0], size=rows, p=[0.8, 0.12, 0.04, 0.04]),
            "trip_distance": trip_distance,
            "fare_amount": fare,
            "extra": np.where(rush > 0.5, 1.0, 0.5),
            "mta_tax": np.full(rows, 0.5),
            "tip_amount": tip,
            "tolls_amount": np.zeros(rows),
            "ehail_fee": np.full(rows, np.nan),
            "improvement_surcharge": np.full(rows, 0.3),
            "total_amount": np.round(fare + tip + 0.8, 2),
            "payment_type": rng.choice([1.0, 2.0], size=rows, p=[0.6, 0.4]),
            "trip_type": np.ones(rows),
            "congestion_surcharge": np.zeros(rows),
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def read_dataframe(path: str | Path):
    """The course's ``read_dataframe``: durations in minutes, 1 to 60 minutes, ``PU_DO``."""
    import pandas as pd

    frame = pd.read_parquet(path)
    frame[TARGET] = (frame.lpep_dropoff_datetime - frame.lpep_pickup_datetime).dt.total_seconds() / 60
    frame = frame[(frame[TARGET] >= 1) & (frame[TARGET] <= 60)].copy()
    for column in ("PULocationID", "DOLocationID"):
        frame[column] = frame[column].astype(str)
    frame["PU_DO"] = frame["PULocationID"] + "_" + frame["DOLocationID"]
    return frame


def features(frame) -> list[dict]:
    """Rows as dicts for a ``DictVectorizer``: the ``PU_DO`` pair and the distance."""
    return frame[CATEGORICAL + NUMERICAL].to_dict(orient="records")
