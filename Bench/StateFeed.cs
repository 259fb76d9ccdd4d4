using System.Globalization;
using System.Text;

namespace OrleansPush.Bench;

/// <summary>The <c>state</c> scenarios' payload: a game state of about 2 KB of JSON (16 units with position, health and
/// a few attributes, plus a scoreboard) in which each message moves two units and changes one other field, as a game
/// server publishing its whole state every tick does. Seeded; thread-safe (publishers call it concurrently).</summary>
internal sealed class StateFeed(int seed)
{
    private const int Units = 16;
    private static readonly string[] Kinds = ["scout", "tank", "medic", "sniper"];
    private static readonly string[] Weapons = ["carbine", "railgun", "grenade-launcher", "plasma-rifle"];
    private readonly Random _random = new(seed);
    private readonly int[] _x = new int[Units];
    private readonly int[] _y = new int[Units];
    private readonly int[] _hp = Enumerable.Repeat(100, Units).ToArray();
    private readonly int[] _score = new int[2];
    private long _tick;

    public byte[] Next()
    {
        lock (_random)
        {
            if (_tick++ == 0)
            {
                for (var u = 0; u < Units; u++)
                {
                    (_x[u], _y[u]) = (_random.Next(4096), _random.Next(4096));
                }
            }
            else
            {
                for (var moves = 0; moves < 2; moves++)
                {
                    var u = _random.Next(Units);
                    _x[u] = Math.Clamp(_x[u] + _random.Next(-16, 17), 0, 4095);
                    _y[u] = Math.Clamp(_y[u] + _random.Next(-16, 17), 0, 4095);
                }

                if (_random.Next(2) == 0)
                {
                    var u = _random.Next(Units);
                    _hp[u] = Math.Max(0, _hp[u] - _random.Next(1, 20));
                }
                else
                {
                    _score[_random.Next(2)]++;
                }
            }

            var json = new StringBuilder(2200);
            json.Append(CultureInfo.InvariantCulture, $"{{\"match\":\"m-{seed}\",\"tick\":{_tick},\"map\":\"harbour\",\"score\":[{_score[0]},{_score[1]}],\"units\":[");
            for (var u = 0; u < Units; u++)
            {
                json.Append(u == 0 ? "" : ",").Append(CultureInfo.InvariantCulture,
                    $"{{\"id\":\"u{u:00}\",\"team\":{u % 2},\"kind\":\"{Kinds[u % Kinds.Length]}\",\"x\":{_x[u]},\"y\":{_y[u]},\"hp\":{_hp[u]},\"armor\":{20 + u},\"weapon\":\"{Weapons[u % Weapons.Length]}\",\"ammo\":{30 + (u * 7 % 50)},\"alive\":{(_hp[u] > 0 ? "true" : "false")}}}");
            }

            return Encoding.UTF8.GetBytes(json.Append("]}").ToString());
        }
    }
}
