using OrleansPush.Gateway.Routing;

namespace OrleansPush.Gateway.Security;

/// <summary>
/// Revoked tokens (<c>POST /api/admin/users/{userId}/revoke</c>). The user's grain keeps, durably, the second at or
/// before which the user's tokens are revoked; this gateway learns it when it attaches the user (and at every lease
/// renewal) and from the <see cref="UserTokensRevoked"/> event on its stream, and asks the grain at the connect of a user
/// it holds nothing of. A refused token is audited (<c>revoked</c>); a live connection whose token is covered is closed
/// with <c>unauthorized</c>, on every transport.
/// </summary>
public sealed class TokenRevocations(IClusterClient cluster, UserConnections users, SecurityAudit audit)
{
    /// <summary>How long a connect waits for the user's grain to say whether the token is revoked.</summary>
    public static readonly TimeSpan LookupTimeout = TimeSpan.FromSeconds(5);

    /// <summary>True when the token is revoked. Without tokens (open mode) nothing is.</summary>
    /// <exception cref="PushRejectedException"><c>unavailable</c>: the user's grain did not answer in time.</exception>
    public async Task<bool> IsRevokedAsync(ConnectionAccess access)
    {
        if (access.UserId is not { } userId || !TopicName.IsValidUserId(userId))
        {
            return false;
        }

        if (users.KnownRevokedBefore(userId) is { } known)
        {
            return access.RevokedBy(known);
        }

        try
        {
            var revokedBefore = await cluster.GetGrain<IUserGrain>(userId).GetRevokedBeforeAsync().WaitAsync(LookupTimeout);
            return access.RevokedBy(revokedBefore);
        }
        catch (Exception ex) when (ex is not PushRejectedException)
        {
            // Fail closed: a token that may be revoked is not let in on a guess.
            throw new PushRejectedException(WireCodes.Unavailable, "Could not check the token; try again.");
        }
    }

    /// <summary>Applies a revocation here: the user's connections whose token it covers are closed with
    /// <c>unauthorized</c>. Returns how many.</summary>
    public int Apply(string userId, long revokedBefore)
    {
        var closed = 0;
        foreach (var connection in users.Revoked(userId, revokedBefore))
        {
            // A connection without a token (open mode) has nothing to revoke.
            if (!ReferenceEquals(connection.Access, ConnectionAccess.None) && connection.Access.RevokedBy(revokedBefore))
            {
                audit.TokenRevoked(userId, connection.Id, connection.RemoteAddress);
                connection.Close(WireCodes.Unauthorized);
                closed++;
            }
        }

        return closed;
    }
}
