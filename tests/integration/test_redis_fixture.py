async def test_redis_works(redis):
    assert await redis.ping()
