"""features.importers on tiny hand-written source files: every mapping rule and reject reason, rows by hand.

Times (UTC): 1234567890 = 2009-02-13 23:31:30, 1234569600 = 2009-02-14 00:00:00, 1234570000 = 2009-02-14
00:06:40; 978300760 = 2000-12-31 22:12:40, 978302109 = 22:35:09, 978298413 = 21:33:33; 1252800000 =
2009-09-13 00:00:00, 1252886400 = 2009-09-14 00:00:00; 1494137644 = 2017-05-07 06:14:04, 1494638778 =
2017-05-13 01:26:18.
"""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality

from features import importers as I
from features.schemas import RAW_EVENTS, RAW_ITEMS, RAW_USERS

# ---------------------------------------------------------------------------------------------- fixtures
ML_RATINGS = [
    "userId,movieId,rating,timestamp",
    "1,10,4.0,1234567890",  # at the threshold: impression + click
    "1,20,3.5,1234567890",  # below; same user and second: the same request as the line above
    "1,30,5.0,1234569600",  # next day, midnight
    "2,10,2.0,1234570000",
    "2,40,4.5,1234570000",  # movie 40 is not in movies.csv
    "3,abc,4.0,1234567890",  # non_numeric_id
    "3,10,four,1234567890",  # non_numeric_rating
    "3,20,4.0",  # wrong_column_count
    "3,20,4.0,yesterday",  # invalid_timestamp
    "1,10,4.0,1234567890",  # duplicate_key (the same line again)
    "   ",  # blank_line
    "4,30,,1234567890",  # missing_field
]
ML_MOVIES = [
    "movieId,title,genres",
    '10,"Shawshank Redemption, The (1994)",Crime|Drama',  # a quoted comma
    "20,Toy Story (1995),Adventure|Animation|Children",
    '30,"Sing a ""Song"", The (1999)",(no genres listed)',  # escaped quotes; no genre -> null category
    "50,Unrated Movie (2000),Comedy",  # in the catalogue, never rated
    "x1,Bad Id (2001),Drama",  # non_numeric_id
    "60,Broken line",  # wrong_column_count
]
ML1M_RATINGS = ["1::1193::5::978300760", "1::661::3::978302109", "2::1193::4::978298413", "2::9::x::978298413"]
ML1M_MOVIES = ["1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
               "661::James and the Giant Peach (1996)::Animation|Children's|Musical"]
ML1M_USERS = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25"]

AMZ_REVIEWS = [
    '{"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000013714", "reviewerName": "J. McDonald", "helpful": [2, 3], '
    '"overall": 5.0, "unixReviewTime": 1252800000, "reviewTime": "09 13, 2009"}',  # 2014
    '{"reviewerID": "A1", "asin": "B001", "overall": 2.0, "unixReviewTime": 1252800000}',
    '{"overall": 4.0, "verified": true, "reviewerID": "A1", "asin": "B002", "unixReviewTime": 1252886400, '
    '"vote": "2"}',  # 2018; B002 has no metadata
    '{"reviewerID": "A3", "asin": "B003", "overall": 3.0}',  # missing_field
    '{"reviewerID": "A3", "asin": "B003", "unixReviewTime": "soon"}',  # invalid_timestamp
    '{"reviewerID": "A4", "asin": "B001", "unixReviewTime": 1252800000000}',  # milliseconds: invalid_timestamp
    "not a json line",  # malformed_json
    '{"reviewerID": "A1", "asin": "B001", "overall": 2.0, "unixReviewTime": 1252800000}',  # duplicate_key
]
AMZ_META = [
    "{'asin': '0000013714', 'title': 'McDonald', 'categories': [['Books', 'Literature & Fiction', 'Poetry'], "
    "['Kindle Store']], 'brand': 'Penguin'}",  # 2014: a Python literal
    '{"asin": "B001", "category": ["Electronics", "Computers", "Mice"], "brand": "Logi, Inc."}',  # 2018
    '{"asin": "B009", "category": [], "brand": ""}',  # empty category and brand: nulls
    '{"title": "no asin"}',  # missing_field
    '{"asin": "B001", "title": "dup"}',  # duplicate_key: sorts after the B001 line above
]

TB_SAMPLES = [
    "user,time_stamp,adgroup_id,pid,nonclk,clk",
    "581738,1494137644,12,430548_1007,1,0",
    "581738,1494137644,3,430548_1007,0,1",  # same request, adgroup 3 < 12: position 1
    "581738,1494137644,7,430539_1007,1,0",  # another pid: a request of its own
    "449818,1494638778,3,430548_1007,1,0",
    "449818,1494638778,3,430548_1007,1,0",  # duplicate_key
    "449818,1494638778,9,430548_1007,1,1",  # invalid_clk (clk + nonclk = 2)
    "449818,1494638778,9,430548_1007,0,2",  # invalid_clk (clk = 2)
    "abc,1494638778,9,430548_1007,1,0",  # non_numeric_id
    "449818,1494638778,9,430548_1007,1",  # wrong_column_count
]
TB_ADS = [
    "adgroup_id,cate_id,campaign_id,customer,brand,price",
    "3,6406,83237,1,95766,522.0",
    "12,4520,387991,6,247789,99.0",
    "7,7266,84351,7,NULL,199.0",  # NULL brand
    "100,1,2,3,4",  # wrong_column_count
]
TB_USERS = [
    "userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,occupation,"
    "new_user_class_level ",  # the trailing space of the real header
    "581738,0,5,2,5,,3,0,3",
    "234,0,10,1,4,,1,0,",
]


def write_lines(tmp_path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def ts(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def day(seconds: int) -> dt.date:
    return ts(seconds).date()


def ev(key: str, user: str, item: str, kind: str, seconds: int, request: str | None, position: int | None):
    return (f"{key}-{'imp' if kind == 'impression' else 'clk'}", user, item, kind, ts(seconds), request, position,
            day(seconds))


def rejects(spark, rows):
    return spark.createDataFrame(rows, I.IMPORT_REJECTS)


def assert_rows(actual, expected_rows, spark, schema):
    assert_df_equality(actual, spark.createDataFrame(expected_rows, schema), ignore_row_order=True,
                       ignore_nullable=True)


# ---------------------------------------------------------------------------------------------- MovieLens
def movielens_csv(spark, tmp_path, **kwargs):
    ratings = I.read_lines(spark, write_lines(tmp_path, "ratings.csv", ML_RATINGS), header=I.ML_RATINGS_HEADER)
    movies = I.read_lines(spark, write_lines(tmp_path, "movies.csv", ML_MOVIES), header=I.ML_MOVIES_HEADER)
    return I.movielens(ratings, movies, **kwargs)


def test_movielens_csv_maps_ratings_to_impressions_and_clicks_in_requests_per_user_second(spark, tmp_path):
    out = movielens_csv(spark, tmp_path)
    r1, r2 = "ml-1-1234567890", "ml-2-1234570000"
    assert_rows(out.events, [
        ev("ml-1-10-1234567890", "1", "10", "impression", 1234567890, r1, None),
        ev("ml-1-10-1234567890", "1", "10", "click", 1234567890, r1, None),
        ev("ml-1-20-1234567890", "1", "20", "impression", 1234567890, r1, None),
        ev("ml-1-30-1234569600", "1", "30", "impression", 1234569600, "ml-1-1234569600", None),
        ev("ml-1-30-1234569600", "1", "30", "click", 1234569600, "ml-1-1234569600", None),
        ev("ml-2-10-1234570000", "2", "10", "impression", 1234570000, r2, None),
        ev("ml-2-40-1234570000", "2", "40", "impression", 1234570000, r2, None),
        ev("ml-2-40-1234570000", "2", "40", "click", 1234570000, r2, None),
    ], spark, RAW_EVENTS)
    assert_rows(out.items, [("10", "Crime", None, None), ("20", "Adventure", None, None), ("30", None, None, None),
                            ("50", "Comedy", None, None), ("40", None, None, None)], spark, RAW_ITEMS)
    assert_rows(out.users, [("1", None, None, None), ("2", None, None, None)], spark, RAW_USERS)
    assert_df_equality(out.rejects, rejects(spark, [
        ("movielens/ratings", "non_numeric_id", "3,abc,4.0,1234567890"),
        ("movielens/ratings", "non_numeric_rating", "3,10,four,1234567890"),
        ("movielens/ratings", "wrong_column_count", "3,20,4.0"),
        ("movielens/ratings", "invalid_timestamp", "3,20,4.0,yesterday"),
        ("movielens/ratings", "duplicate_key", "1,10,4.0,1234567890"),
        ("movielens/ratings", "blank_line", "   "),
        ("movielens/ratings", "missing_field", "4,30,,1234567890"),
        ("movielens/movies", "non_numeric_id", "x1,Bad Id (2001),Drama"),
        ("movielens/movies", "wrong_column_count", "60,Broken line"),
    ]), ignore_row_order=True, ignore_nullable=True)
    # 12 rating rows (the header is not one) = 5 imported + 7 rejected; 6 movie rows = 4 + 2
    counts = {name: rows.groupBy("reason").count().collect() for name, rows in out.sources.items()}
    assert {n: sum(r["count"] for r in rows) for n, rows in counts.items()} == {"movielens/ratings": 12,
                                                                               "movielens/movies": 6}


def test_click_threshold_decides_which_ratings_are_clicks(spark, tmp_path):
    out = movielens_csv(spark, tmp_path, click_threshold=4.5)
    clicks = {r.event_id for r in out.events.where("event_type = 'click'").collect()}
    assert clicks == {"ml-1-30-1234569600-clk", "ml-2-40-1234570000-clk"}  # 5.0 and 4.5; 4.0 is below now


def test_a_conflicting_duplicate_keeps_the_first_line_in_text_order(spark, tmp_path):
    lines = ["userId,movieId,rating,timestamp", "7,1,4.0,1234567890", "7,1,3.0,1234567890"]
    ratings = I.read_lines(spark, write_lines(tmp_path, "ratings.csv", lines), header=I.ML_RATINGS_HEADER)
    out = I.movielens(ratings)
    assert [r.event_id for r in out.events.collect()] == ["ml-7-1-1234567890-imp"]  # "7,1,3.0" < "7,1,4.0"
    assert [tuple(r) for r in out.rejects.collect()] == [("movielens/ratings", "duplicate_key", "7,1,4.0,1234567890")]


def test_movielens_1m_dat_files_with_user_profiles(spark, tmp_path):
    ratings = I.read_lines(spark, write_lines(tmp_path, "ratings.dat", ML1M_RATINGS))
    movies = I.read_lines(spark, write_lines(tmp_path, "movies.dat", ML1M_MOVIES))
    users = I.read_lines(spark, write_lines(tmp_path, "users.dat", ML1M_USERS))
    out = I.movielens(ratings, movies, users, ratings_format="dat", movies_format="dat")
    assert_rows(out.events, [
        ev("ml-1-1193-978300760", "1", "1193", "impression", 978300760, "ml-1-978300760", None),
        ev("ml-1-1193-978300760", "1", "1193", "click", 978300760, "ml-1-978300760", None),
        ev("ml-1-661-978302109", "1", "661", "impression", 978302109, "ml-1-978302109", None),
        ev("ml-2-1193-978298413", "2", "1193", "impression", 978298413, "ml-2-978298413", None),
        ev("ml-2-1193-978298413", "2", "1193", "click", 978298413, "ml-2-978298413", None),
    ], spark, RAW_EVENTS)
    assert_rows(out.items, [("1193", "Drama", None, None), ("661", "Animation", None, None)], spark, RAW_ITEMS)
    assert_rows(out.users, [("1", "F", "1", "48067"), ("2", "M", "56", "70072")], spark, RAW_USERS)
    assert_df_equality(out.rejects, rejects(spark, [
        ("movielens/ratings", "non_numeric_rating", "2::9::x::978298413"),
        ("movielens/users", "wrong_column_count", "3::M::25"),
    ]), ignore_row_order=True, ignore_nullable=True)


# ---------------------------------------------------------------------------------------------- Amazon
def test_amazon_reviews_are_clicks_in_requests_of_their_own_and_both_meta_formats_map(spark, tmp_path):
    reviews = I.read_lines(spark, write_lines(tmp_path, "reviews.json", AMZ_REVIEWS))
    meta = I.read_lines(spark, write_lines(tmp_path, "meta.json", AMZ_META))
    out = I.amazon(reviews, meta)
    k1, k2, k3 = "amz-A2SUAM1J3GNN3B-0000013714-1252800000", "amz-A1-B001-1252800000", "amz-A1-B002-1252886400"
    assert_rows(out.events, [
        ev(k1, "A2SUAM1J3GNN3B", "0000013714", "impression", 1252800000, k1, 1),
        ev(k1, "A2SUAM1J3GNN3B", "0000013714", "click", 1252800000, k1, 1),
        ev(k2, "A1", "B001", "impression", 1252800000, k2, 1),
        ev(k2, "A1", "B001", "click", 1252800000, k2, 1),
        ev(k3, "A1", "B002", "impression", 1252886400, k3, 1),
        ev(k3, "A1", "B002", "click", 1252886400, k3, 1),
    ], spark, RAW_EVENTS)
    assert_rows(out.items, [("0000013714", "Poetry", None, "Penguin"), ("B001", "Mice", None, "Logi, Inc."),
                            ("B009", None, None, None), ("B002", None, None, None)], spark, RAW_ITEMS)
    assert_rows(out.users, [("A2SUAM1J3GNN3B", None, None, None), ("A1", None, None, None)], spark, RAW_USERS)
    assert_df_equality(out.rejects, rejects(spark, [
        ("amazon/reviews", "missing_field", AMZ_REVIEWS[3]),
        ("amazon/reviews", "invalid_timestamp", AMZ_REVIEWS[4]),
        ("amazon/reviews", "invalid_timestamp", AMZ_REVIEWS[5]),
        ("amazon/reviews", "malformed_json", "not a json line"),
        ("amazon/reviews", "duplicate_key", AMZ_REVIEWS[7]),
        ("amazon/meta", "missing_field", '{"title": "no asin"}'),
        ("amazon/meta", "duplicate_key", '{"asin": "B001", "title": "dup"}'),
    ]), ignore_row_order=True, ignore_nullable=True)


# ---------------------------------------------------------------------------------------------- Taobao
def test_taobao_requests_positions_by_adgroup_null_brand_and_click_flags(spark, tmp_path):
    samples = I.read_lines(spark, write_lines(tmp_path, "raw_sample.csv", TB_SAMPLES), header=I.TB_SAMPLES_HEADER)
    ads = I.read_lines(spark, write_lines(tmp_path, "ad_feature.csv", TB_ADS), header=I.TB_ADS_HEADER)
    users = I.read_lines(spark, write_lines(tmp_path, "user_profile.csv", TB_USERS), header=I.TB_USERS_HEADER)
    out = I.taobao(samples, ads, users)
    ra, rb = "tb-581738-1494137644-430548_1007", "tb-581738-1494137644-430539_1007"
    rc = "tb-449818-1494638778-430548_1007"
    assert_rows(out.events, [
        ev(f"{ra}-3", "581738", "3", "impression", 1494137644, ra, 1),
        ev(f"{ra}-3", "581738", "3", "click", 1494137644, ra, 1),
        ev(f"{ra}-12", "581738", "12", "impression", 1494137644, ra, 2),  # numeric order: 3 before 12
        ev(f"{rb}-7", "581738", "7", "impression", 1494137644, rb, 1),
        ev(f"{rc}-3", "449818", "3", "impression", 1494638778, rc, 1),
    ], spark, RAW_EVENTS)
    assert_rows(out.items, [("3", "6406", "1", "95766"), ("12", "4520", "6", "247789"), ("7", "7266", "7", None)],
                spark, RAW_ITEMS)
    assert_rows(out.users, [("581738", "2", "5", None), ("234", "1", "4", None), ("449818", None, None, None)],
                spark, RAW_USERS)
    assert_df_equality(out.rejects, rejects(spark, [
        ("taobao/raw_sample", "duplicate_key", "449818,1494638778,3,430548_1007,1,0"),
        ("taobao/raw_sample", "invalid_clk", "449818,1494638778,9,430548_1007,1,1"),
        ("taobao/raw_sample", "invalid_clk", "449818,1494638778,9,430548_1007,0,2"),
        ("taobao/raw_sample", "non_numeric_id", "abc,1494638778,9,430548_1007,1,0"),
        ("taobao/raw_sample", "wrong_column_count", "449818,1494638778,9,430548_1007,1"),
        ("taobao/ad_feature", "wrong_column_count", "100,1,2,3,4"),
    ]), ignore_row_order=True, ignore_nullable=True)


# ---------------------------------------------------------------------------------------------- reading
def test_read_lines_refuses_a_missing_file_an_empty_file_and_another_header(spark, tmp_path):
    with pytest.raises(I.ImportInputError, match="cannot read"):
        I.read_lines(spark, str(tmp_path / "nope.csv"))
    with pytest.raises(I.ImportInputError, match="is empty"):
        (tmp_path / "empty.csv").write_text("")
        I.read_lines(spark, str(tmp_path / "empty.csv"), header=I.ML_RATINGS_HEADER)
    with pytest.raises(I.ImportInputError, match="expected the header 'userId,movieId,rating,timestamp'"):
        I.read_lines(spark, write_lines(tmp_path, "movies.csv", ML_MOVIES), header=I.ML_RATINGS_HEADER)
    # a BOM, quotes, spaces and case around the header names are tolerated
    bom = I.read_lines(spark, write_lines(tmp_path, "bom.csv", ['\ufeff"userid", "movieId",rating,timestamp ']),
                       header=I.ML_RATINGS_HEADER)
    assert I.movielens(bom).sources["movielens/ratings"].count() == 0  # the header is not a source row


@pytest.mark.parametrize("path, fmt", [("ratings.csv", "csv"), ("x/ratings.DAT", "dat"), ("meta.json.gz", "json"),
                                       ("a.jsonl", "json"), ("ratings.txt", None), ("s3a://b/ratings.csv.bz2", "csv")])
def test_source_format_follows_the_extension(path, fmt):
    assert I.source_format(path) == fmt
