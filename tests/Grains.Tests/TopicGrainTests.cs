using System.Text;

namespace OrleansPush.Grains.Tests;

[Collection(ClusterCollection.Name)]
public sealed class TopicGrainTests(ClusterFixture fixture)
{
    private static byte[] Json(string s) => Encoding.UTF8.GetBytes(s);

    private ITopicGrain Topic(string name) => fixture.Grains.GetGrain<ITopicGrain>(name);

    [Fact]
    public async Task SeqRisesByOneWithinOneEpoch()
    {
        var topic = Topic("seq-" + Guid.NewGuid().ToString("N"));
        var positions = new List<TopicPosition>();
        for (var i = 0; i < 10; i++)
        {
            positions.Add(await topic.PublishAsync(Json($"{{\"i\":{i}}}"), null));
        }

        Assert.Equal(Enumerable.Range(1, 10).Select(i => (long)i), positions.Select(p => p.Seq));
        Assert.Single(positions.Select(p => p.Epoch).Distinct());
        Assert.Equal(positions[^1], await topic.GetPositionAsync());
    }

    [Fact]
    public async Task HistoryKeepsOnlyTheNamespacesSize()
    {
        var topic = Topic("small:" + Guid.NewGuid().ToString("N"));
        for (var i = 1; i <= 12; i++)
        {
            await topic.PublishAsync(Json($"{{\"i\":{i}}}"), null);
        }

        var all = await topic.ReadAsync(0, 100);
        Assert.Equal(12, all.Head);
        Assert.Equal(8, all.FirstAvailable);
        Assert.Equal([8L, 9, 10, 11, 12], all.Messages.Select(m => m.Seq));
        Assert.Equal("{\"i\":12}", Encoding.UTF8.GetString(all.Messages[^1].Data));

        var last2 = await topic.ReadLastAsync(2);
        Assert.Equal([11L, 12], last2.Messages.Select(m => m.Seq));

        var after10 = await topic.ReadAsync(10, 100);
        Assert.Equal([11L, 12], after10.Messages.Select(m => m.Seq));
    }

    [Theory]
    [InlineData("has space")]
    [InlineData("emoji-\u263A")]
    [InlineData("semi;colon")]
    public async Task InvalidNamesAreRefusedAsBadTopic(string name)
    {
        var error = await Assert.ThrowsAsync<PushRejectedException>(() => Topic(name).PublishAsync(Json("1"), null));
        Assert.Equal("bad_topic", error.Code);
    }

    [Fact]
    public async Task NameOfTwoHundredCharactersIsAcceptedAndOneMoreIsNot()
    {
        var ok = await Topic(new string('a', 200)).PublishAsync(Json("1"), null);
        Assert.Equal(1, ok.Seq);
        var error = await Assert.ThrowsAsync<PushRejectedException>(() => Topic(new string('a', 201)).PublishAsync(Json("1"), null));
        Assert.Equal("bad_topic", error.Code);
    }

    [Fact]
    public async Task SameIdempotencyKeyReturnsTheFirstPositionAndPublishesOnce()
    {
        var topic = Topic("idem-" + Guid.NewGuid().ToString("N"));
        var first = await topic.PublishAsync(Json("{\"a\":1}"), "key-1");
        var retry = await topic.PublishAsync(Json("{\"a\":1}"), "key-1");
        var other = await topic.PublishAsync(Json("{\"a\":2}"), "key-2");

        Assert.Equal(first, retry);
        Assert.Equal(2, other.Seq);
        Assert.Equal(2, (await topic.ReadAsync(0, 10)).Messages.Length);
    }

    /// <summary>Defect 9 of issue 10 (grain part): the in-cluster API refuses what is not one JSON value, so no
    /// transport ever has to encode it.</summary>
    [Theory]
    [InlineData("not json")]
    [InlineData("{\"a\":1} {\"b\":2}")]
    [InlineData("{\"a\":")]
    [InlineData("")]
    [InlineData("   ")]
    public async Task APayloadThatIsNotOneJsonValueIsRefusedAsBadRequestByTopicAndUserGrains(string payload)
    {
        var topic = Topic("json-" + Guid.NewGuid().ToString("N"));
        var error = await Assert.ThrowsAsync<PushRejectedException>(() => topic.PublishAsync(Json(payload), null));
        Assert.Equal("bad_request", error.Code);

        var user = fixture.Grains.GetGrain<IUserGrain>("u" + Guid.NewGuid().ToString("N"));
        var pushError = await Assert.ThrowsAsync<PushRejectedException>(() => user.PushAsync(Json(payload), null));
        Assert.Equal("bad_request", pushError.Code);

        Assert.Equal(0, (await topic.GetPositionAsync()).Seq);
        var accepted = await topic.PublishAsync(Json(" {\"ok\":[1,2]} "), null);
        Assert.Equal(1, accepted.Seq);
        Assert.Equal(PayloadFormat.Json, (await topic.ReadAsync(0, 10)).Messages.Single().Format);
    }

    [Fact]
    public async Task BinaryPublishTakesAnyBytesAndKeepsItsKindWhileJsonIsStillChecked()
    {
        var topic = Topic("binary-" + Guid.NewGuid().ToString("N"));
        byte[] garbled = [0x00, 0xff, 0xc3, 0x28];
        Assert.Equal(1, (await topic.PublishAsync(garbled, PayloadFormat.Binary, null)).Seq);
        Assert.Equal(2, (await topic.PublishAsync([], PayloadFormat.Binary, null)).Seq);
        Assert.Equal("bad_request", (await Assert.ThrowsAsync<PushRejectedException>(() => topic.PublishAsync(garbled, PayloadFormat.Json, null))).Code);
        Assert.Equal("bad_request", (await Assert.ThrowsAsync<PushRejectedException>(() => topic.PublishAsync(garbled, (PayloadFormat)7, null))).Code);
        Assert.Equal(3, (await topic.PublishAsync(Json("[3]"), PayloadFormat.Json, null)).Seq);

        // A keyed retry of a binary publish is answered with the first position, and stored once.
        var keyed = await topic.PublishAsync(garbled, PayloadFormat.Binary, "k");
        Assert.Equal(keyed, await topic.PublishAsync(garbled, PayloadFormat.Binary, "k"));

        var user = "u" + Guid.NewGuid().ToString("N");
        await fixture.Grains.GetGrain<IUserGrain>(user).PushAsync(garbled, PayloadFormat.Binary, null);
        Assert.Equal((PayloadFormat.Binary, Convert.ToHexString(garbled)),
            (await Topic("user:" + user).ReadAsync(0, 10)).Messages.Select(m => (m.Format, Convert.ToHexString(m.Data))).Single());

        var history = (await topic.ReadAsync(0, 10)).Messages;
        Assert.Equal([PayloadFormat.Binary, PayloadFormat.Binary, PayloadFormat.Json, PayloadFormat.Binary], history.Select(m => m.Format));
        Assert.Equal([Convert.ToHexString(garbled), string.Empty, "5B335D", Convert.ToHexString(garbled)], history.Select(m => Convert.ToHexString(m.Data)));
    }

    [Fact]
    public async Task GatewayLeaseLapsesWhenNotRenewed()
    {
        var topic = Topic("lease-" + Guid.NewGuid().ToString("N"));
        await topic.AddInterestAsync("gw-a");
        await topic.AddInterestAsync("gw-b");
        Assert.Equal(["gw-a", "gw-b"], (await topic.GetGatewaysAsync()).Order());

        // Only gw-b renews; gw-a's lease lapses.
        var deadline = DateTime.UtcNow + ClusterFixture.Lease * 2;
        while (DateTime.UtcNow < deadline)
        {
            await Task.Delay(ClusterFixture.Lease / 4);
            await topic.AddInterestAsync("gw-b");
        }

        Assert.Equal(["gw-b"], await topic.GetGatewaysAsync());
        await topic.RemoveInterestAsync("gw-b");
        Assert.Empty(await topic.GetGatewaysAsync());
    }

    [Fact]
    public async Task UserSubscriptionsAreKeptAndPersonalPushUsesThePersonalChannel()
    {
        var user = fixture.Grains.GetGrain<IUserGrain>("u" + Guid.NewGuid().ToString("N"));
        Assert.True(await user.SubscribeAsync("news"));
        Assert.False(await user.SubscribeAsync("news"));
        Assert.True(await user.SubscribeAsync("chat:room1"));
        Assert.Equal(["chat:room1", "news"], (await user.GetSubscriptionsAsync()).Order());
        Assert.True(await user.UnsubscribeAsync("news"));
        Assert.Equal(["chat:room1"], await user.AttachAsync("gw-x"));

        var position = await user.PushAsync(Json("{\"dm\":true}"), null);
        Assert.Equal(1, position.Seq);
        var userId = user.GetPrimaryKeyString();
        var history = await fixture.Grains.GetGrain<ITopicGrain>(TopicName.Personal(userId)).ReadAsync(0, 10);
        Assert.Equal("{\"dm\":true}", Encoding.UTF8.GetString(history.Messages.Single().Data));
    }

    /// <summary>Defect 5 of issue 10 (grain part): the user grain changed its list before storing it, so after a failed
    /// write a retry answered "no change" and neither stored nor announced it.</summary>
    [Fact]
    public async Task ASubscribeWhoseStateWriteFailedIsStoredWhenRetried()
    {
        await using var silo = await StoreSilo.StartAsync(new History.MemoryHistoryStore(TimeProvider.System));
        var user = silo.Grains.GetGrain<IUserGrain>("u" + Guid.NewGuid().ToString("N"));
        Assert.True(await user.SubscribeAsync("news"));

        silo.StateStorage.FailWrites(1);
        await Assert.ThrowsAnyAsync<Exception>(() => user.SubscribeAsync("sports"));
        silo.StateStorage.FailWrites(1);
        await Assert.ThrowsAnyAsync<Exception>(() => user.UnsubscribeAsync("news"));
        Assert.Equal(["news"], (await user.GetSubscriptionsAsync()).Order());

        Assert.True(await user.SubscribeAsync("sports"));
        Assert.True(await user.UnsubscribeAsync("news"));
        await silo.DeactivateAsync(user);
        Assert.Equal(["sports"], await user.GetSubscriptionsAsync());
    }

    [Fact]
    public async Task UserIdWithColonIsRefused()
    {
        var error = await Assert.ThrowsAsync<PushRejectedException>(() => fixture.Grains.GetGrain<IUserGrain>("a:b").SubscribeAsync("news"));
        Assert.Equal("bad_request", error.Code);
    }
}
