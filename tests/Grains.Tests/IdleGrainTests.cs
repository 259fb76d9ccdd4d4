using System.Text;

namespace OrleansPush.Grains.Tests;

/// <summary>Issue 16: topic and user grains without calls deactivate after <c>OrleansPush:Silo:IdleGrainTimeout</c>;
/// one whose lease a gateway keeps renewing stays.</summary>
public sealed class IdleGrainTests
{
    private static readonly TimeSpan Idle = TimeSpan.FromSeconds(4);

    [Fact]
    public async Task IdleTopicAndUserGrainsDeactivateAndARenewedOneStays()
    {
        await using var silo = await StoreSilo.StartAsync(new History.MemoryHistoryStore(TimeProvider.System), new Dictionary<string, string?>
        {
            ["OrleansPush:Silo:IdleGrainTimeout"] = Idle.ToString(),
        });
        var quiet = silo.Grains.GetGrain<ITopicGrain>("quiet-" + Guid.NewGuid().ToString("N"));
        var user = silo.Grains.GetGrain<IUserGrain>("u" + Guid.NewGuid().ToString("N"));
        var leased = silo.Grains.GetGrain<ITopicGrain>("leased-" + Guid.NewGuid().ToString("N"));
        var position = await quiet.PublishAsync(Encoding.UTF8.GetBytes("{\"n\":1}"), null);
        await user.SubscribeAsync("news");
        await leased.AddInterestAsync("gw-renewing");
        Assert.True(await IsActiveAsync(silo, quiet));

        // A gateway renews its lease on one topic at a third of the lease (ClusterFixture: 2 s); nobody calls the others.
        var deadline = DateTime.UtcNow + (Idle * 1.5) + TimeSpan.FromSeconds(10);
        while (await IsActiveAsync(silo, quiet) || await IsActiveAsync(silo, user))
        {
            Assert.True(DateTime.UtcNow < deadline, "idle grains were still active 1.5 idle timeouts + 10 s after their last call");
            await leased.AddInterestAsync("gw-renewing");
            await Task.Delay(ClusterFixture.Lease / 3);
        }

        Assert.True(await IsActiveAsync(silo, leased));

        // Their durable state is where they left it.
        Assert.Equal(position, await quiet.GetPositionAsync());
        Assert.Equal(["news"], await user.GetSubscriptionsAsync());
    }

    private static async Task<bool> IsActiveAsync(StoreSilo silo, IAddressable grain)
    {
        var id = grain.GetGrainId();
        return (await silo.Grains.GetGrain<IManagementGrain>(0).GetActiveGrains(id.Type)).Contains(id);
    }
}
